"""lit_transfer.compat_cli: the help formatter that keeps `fit --help` short (it overrides a protected
argparse/jsonargparse method, so these pin what it relies on)."""

from jsonargparse import ArgumentParser

from lit_transfer.compat_cli import CompactHelpFormatter, first_sentence, short_class_names


def test_first_sentence_keeps_abbreviations_and_stops_at_paragraphs():
    assert first_sentence("A loss (e.g. L2SP). More text.") == "A loss (e.g. L2SP)."
    assert first_sentence("Uses ``x.y`` files.\n\nDetails.") == "Uses ``x.y`` files."
    assert first_sentence("no period at all") == "no period at all"


def test_known_subclasses_by_short_name_unless_two_share_it():
    text = "(type: X, known subclasses: a.b.LinearHead, c.Checkpoint, d.Checkpoint)"
    assert short_class_names(text) == "(type: X, known subclasses: LinearHead, c.Checkpoint, d.Checkpoint)"


def test_formatter_shortens_the_description_and_keeps_type_and_default():
    parser = ArgumentParser(prog="p", formatter_class=CompactHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.1, help="Learning rate. A long second sentence here.")
    text = parser.format_help()
    assert "Learning rate. (type: float, default: 0.1)" in " ".join(text.split())
    assert "second sentence" not in text
