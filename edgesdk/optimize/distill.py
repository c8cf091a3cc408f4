"""Knowledge distillation: a small student learns from a teacher's softened outputs as well as the labels.

loss = alpha * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - alpha) * CE(student, labels)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones (Hinton et al.).
Samples labelled -1 count only through the teacher: a large unlabelled set is where distillation pays."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import require


def distillation_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float = 4.0,
                      alpha: float = 0.7) -> Any:
    torch = require("torch", "torch", "Distillation")
    f = torch.nn.functional
    soft = f.kl_div(f.log_softmax(student_logits / temperature, -1), f.softmax(teacher_logits / temperature, -1),
                    reduction="batchmean") * temperature ** 2
    labeled = labels >= 0  # label -1 (or -100) marks unlabeled samples: the teacher alone teaches them
    if not bool(labeled.any()):
        return soft
    return alpha * soft + (1 - alpha) * f.cross_entropy(student_logits[labeled], labels[labeled])


def distill(student: Any, teacher: Any, batches: Callable[[], Iterable[tuple[Any, Any]]], epochs: int = 10,
            lr: float = 1e-3, temperature: float = 4.0, alpha: float = 0.7, progress: bool = True) -> Any:
    """Train student on teacher's soft targets plus the labels, on the CPU; returns the student."""
    torch = require("torch", "torch", "Distillation")
    teacher.eval()
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    bar = None
    if progress:
        try:
            from rich.progress import Progress

            bar = Progress(transient=True)
        except ImportError:
            bar = None
    task = bar.add_task("distilling", total=epochs) if bar else None
    if bar:
        bar.start()
    try:
        for _ in range(epochs):
            student.train()
            for x, y in batches():
                with torch.no_grad():
                    t = teacher(x)
                opt.zero_grad()
                distillation_loss(student(x), t, y, temperature, alpha).backward()
                opt.step()
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    student.eval()
    return student
