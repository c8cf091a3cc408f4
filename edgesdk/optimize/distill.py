"""Knowledge distillation: a small student learns from a teacher's outputs.

For classifiers (loss="kl"), from the softened outputs as well as the labels:
loss = alpha * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - alpha) * CE(student, labels)
The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones (Hinton et al.).
Samples labelled -1 count only through the teacher: a large unlabelled set is where distillation pays.

For encoders (loss="hidden"), from the token states themselves, on unlabelled text: the masked mean
squared error of the states plus (1 - cosine) of their masked means, the sentence embeddings
(TinyBERT / DistilBERT-style representation distillation). Inputs may be a tensor, a tuple or a dict
({"input_ids": ..., "attention_mask": ...}); the mask, when given, keeps padding out of the loss."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..core.errors import require


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


def hidden_state_loss(student_states: Any, teacher_states: Any, mask: Any = None) -> Any:
    """Masked MSE of token states [batch, tokens, dim] plus (1 - cosine) of their masked means."""
    torch = require("torch", "torch", "Distillation")
    weights = (mask if mask is not None else torch.ones(student_states.shape[:2])).unsqueeze(-1).float()
    mse = (((student_states - teacher_states) ** 2) * weights).sum() / (weights.sum() * student_states.shape[-1])
    pooled = [(s * weights).sum(1) / weights.sum(1).clamp(min=1e-9) for s in (student_states, teacher_states)]
    return mse + (1 - torch.nn.functional.cosine_similarity(*pooled, dim=-1)).mean()


def _call(model: Any, x: Any) -> Any:
    return model(**x) if isinstance(x, dict) else model(*x) if isinstance(x, tuple) else model(x)


def distill(student: Any, teacher: Any, batches: Callable[[], Iterable[tuple[Any, Any]]], epochs: int = 10,
            lr: float = 1e-3, temperature: float = 4.0, alpha: float = 0.7, progress: bool = True,
            loss: str = "kl") -> Any:
    """Train student on the teacher's outputs, on the CPU; returns the student. loss="kl": soft targets
    plus the labels (classifiers); loss="hidden": token states and sentence embeddings (encoders; the
    batches' labels are ignored and may be None)."""
    if loss not in ("kl", "hidden"):
        from ..core.errors import UsageError

        raise UsageError(f"loss must be 'kl' (classifiers) or 'hidden' (encoders), not {loss!r}.")
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
                    t = _call(teacher, x)
                opt.zero_grad()
                out = _call(student, x)
                if loss == "hidden":
                    value = hidden_state_loss(out, t, x.get("attention_mask") if isinstance(x, dict) else None)
                else:
                    value = distillation_loss(out, t, y, temperature, alpha)
                value.backward()
                opt.step()
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    student.eval()
    return student
