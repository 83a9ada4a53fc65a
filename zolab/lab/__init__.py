"""The lab: the Lightning module, CLI, sweeps, strategy, run directories and callbacks that run rules on tasks."""
