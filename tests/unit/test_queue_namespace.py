"""Stacks sharing one Redis: a namespace other than the default gives the stack queues of its own."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.queueing import processing_queues


def test_the_default_namespace_keeps_the_plain_queue_names():
    assert [q.name for q in processing_queues(Settings()).values()] == ["uploads", "documents", "videos"]


def test_another_namespace_prefixes_every_queue_not_named_explicitly(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BROKER_REDIS_NAMESPACE", "stack2")
    monkeypatch.setenv("BROKER_VIDEO_QUEUE_NAME", "gpu-videos")  # what a user sets always wins
    names = [q.name for q in processing_queues(Settings()).values()]
    assert names == ["stack2-uploads", "stack2-documents", "gpu-videos"]
