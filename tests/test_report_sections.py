"""Another part of the package adds a section to the report through the renderer, not by editing its files."""

import json

from lit_transfer.report import Section, collect, summarise, weights_origin, write_report


def _results(tmp_path):
    for seed, (s, f) in enumerate([(0.5, 0.6), (0.55, 0.7)]):
        for strategy, acc in (("scratch", s), ("finetune", f)):
            d = tmp_path / "runs" / f"{strategy}{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps({
                "status": "ok", "experiment": "e", "strategy": strategy, "seed": seed, "target_shots": 5,
                "split_hash": str(seed), "metrics": {"target/test_acc": acc},
                "convergence": {"still_improving": False}}))
    return summarise(collect(tmp_path / "runs")[0])


def test_sections_are_appended_to_the_markdown_and_placed_before_the_end_of_the_page(tmp_path):
    summary = _results(tmp_path)
    plain = write_report(summary, tmp_path / "plain", "src")
    md, page = plain["md"].read_text(), plain["html"].read_text()
    extra = Section(markdown="## Extra\n\nbody\n", html="<h2>Extra</h2>", console="printed")
    note = Section(console="a note only: adds nothing to the files")
    files = write_report(summary, tmp_path / "with", "src", [note, extra])
    assert files["md"].read_text() == md + "\n## Extra\n\nbody\n"
    assert files["html"].read_text() == page.replace("</body>", "<h2>Extra</h2></body>")
    assert files["csv"].read_text() == plain["csv"].read_text()


def test_old_results_weights_are_read_by_the_one_parser():
    for word in ("hub", "imagenet", "Pretrained"):
        assert weights_origin({"weights": word}) == "pretrained (hub)"
    assert weights_origin({"weights": "null"}) == "random"
    assert weights_origin({"weights": "/w/model.safetensors"}) == "file"
