"""The ``plastic-rl`` commands: one module per command, each with ``add_arguments(parser)`` and ``run(args)``.

:mod:`plastic_rl.cli` maps the command words to these modules. A command parses its options, calls the library and
prints; bad input is raised as :class:`~plastic_rl.core.options.BadInputError` (or
:class:`~plastic_rl.data.DataError`) for the CLI to report. A command module imports only light modules at its top and
the heavy ones (torch, SB3, ...) in ``run``, so that ``--help`` answers at once. The commands sit at the top of the
import order: nothing in the library imports them.

:mod:`plastic_rl.commands.run_selection` holds the options that choose a trained agent, which ``enjoy`` and
``evaluate`` share. One entry point here is not a ``plastic-rl`` command: :mod:`plastic_rl.commands.zoo`, RL Baselines3
Zoo's scripts with our algorithms registered, run as ``python -m plastic_rl.commands.zoo SCRIPT`` with the Zoo's own
command line.
"""
