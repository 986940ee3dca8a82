"""One experiment runner for every task: resumable grids of runs, their statistics, local or on Ray.

:mod:`~plastic_rl.experiments.study` builds and schedules the grid and the summary; a
:class:`~plastic_rl.experiments.adapter.TaskAdapter` per kind of run (:mod:`~plastic_rl.experiments.rl`,
:mod:`~plastic_rl.experiments.supervised`) launches one run and reads back its curve and final score;
:mod:`~plastic_rl.experiments.tasks` names the tasks and their adapters.
"""
