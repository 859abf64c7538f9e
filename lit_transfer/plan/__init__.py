"""The run plan: the one place that reads a command line and decides what a run is.

- :mod:`~lit_transfer.plan.weights`: ``model.weights`` as a typed value (``Random | Hub | File | SourceStage``).
- :mod:`~lit_transfer.plan.command_line`: the only scanner of argument lists (``--key value``/``--key=value``).
"""
