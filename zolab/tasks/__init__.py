"""Tasks: objectives (``Task``) with their ``LightningDataModule``s."""

from zolab.tasks.base import Task

__all__ = ["Task"]
