"""The ``plastic-rl bench`` benchmarks, a module each: ``core`` (the plastic core's unroll), ``a2c`` (PlasticA2C's
training loop), ``patterns`` and ``images`` (a supervised task's training step) and ``omniglot``.

Like the commands (:mod:`plastic_rl.commands`), each defines ``add_arguments(parser)`` and ``run(args)``, imports its
heavy modules in ``run``, and sits at the top of the import order. :mod:`~plastic_rl.benchmarks.measure` holds what
they share: the clock, the memory readings and the fresh process of each measurement.
"""
