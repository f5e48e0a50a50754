"""SCHED_NONE, and every UDP socket: the primary's listener is installed
under the app's socket fd (``dup2``); the app accepts on it as on its own."""

from __future__ import annotations

from .base import DescriptorBinding


class SharedBinding(DescriptorBinding):
    mode = "shared"
