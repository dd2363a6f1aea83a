"""Build artifacts people read: the report (Markdown with a mermaid loss chart, which GitHub
renders), the loss chart as a PNG, and the model card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAX_POINTS = 40


def _series(history: Sequence[Mapping[str, Any]]) -> list[float]:
    losses = [float(h["loss"]) for h in history if isinstance(h.get("loss"), int | float)]
    if len(losses) <= MAX_POINTS:
        return losses
    step = len(losses) / MAX_POINTS
    return [losses[int(i * step)] for i in range(MAX_POINTS)]


def mermaid_loss(title: str, history: Sequence[Mapping[str, Any]]) -> str:
    """A mermaid ``xychart-beta`` line chart of the training loss."""
    points = _series(history)
    if not points:
        return f"_{title}: no training steps._"
    values = ", ".join(f"{p:.3f}" for p in points)
    top = max(points) * 1.1
    return (
        "```mermaid\nxychart-beta\n"
        f'  title "{title} training loss"\n'
        f'  x-axis "logged step" 1 --> {len(points)}\n'
        f'  y-axis "loss" 0 --> {top:.2f}\n'
        f"  line [{values}]\n```"
    )


def loss_png(phases: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> bool:
    """Loss curves of every phase in one PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, max(1, len(phases)), figsize=(5 * max(1, len(phases)), 3.2))
    axes_list = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, (name, history) in zip(axes_list, phases.items(), strict=False):
        steps = [h.get("step", i) for i, h in enumerate(history) if "loss" in h]
        losses = [h["loss"] for h in history if "loss" in h]
        ax.plot(steps, losses, color="#1f6feb")
        ax.set_title(f"{name}: training loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def leaf_table(table: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "| leaf | ROUGE-L base | phase 1 | phase 2 | ref. loss base | phase 2 | better? "
        "| retention |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        retention = r.get("retention")
        rows.append(
            f"| `{str(r['leaf']).removesuffix('/qna.yaml')}` | {_fmt(r.get('base_rouge_l'))} | "
            f"{_fmt(r.get('phase1_rouge_l'))} | {_fmt(r.get('phase2_rouge_l'))} | "
            f"{_fmt(r.get('base_ref_loss'))} | {_fmt(r.get('phase2_ref_loss'))} | "
            f"{'yes' if r.get('improved') else 'no'} | "
            f"{'–' if retention is None else f'{100 * retention:.0f}%'} |"
        )
    return "\n".join(rows)


def answers_table(
    answers: Mapping[str, Sequence[Mapping[str, Any]]], leaf: str | None = None
) -> str:
    """Each held-out question with the expected answer and the final model's answer."""
    final = answers.get("phase2") or []
    base = {a["question"]: a for a in answers.get("base") or []}
    rows = ["| question | expected | base model | new model |", "|---|---|---|---|"]
    for a in final:
        if leaf is not None and a["leaf"] != leaf:
            continue
        before = base.get(a["question"], {}).get("answer", "")
        rows.append(
            f"| {_cell(a['question'])} | {_cell(a['reference'])} | {_cell(before)} "
            f"| {_cell(a['answer'])} |"
        )
    return "\n".join(rows)


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report_markdown(
    *,
    taxonomy: Mapping[str, Any],
    counts: Mapping[str, Any],
    generation: Mapping[str, Any],
    phases: Mapping[str, Mapping[str, Any]],
    table: Sequence[Mapping[str, Any]],
    answers: Mapping[str, Sequence[Mapping[str, Any]]],
    png_name: str | None,
) -> str:
    improved = sum(1 for r in table if r.get("improved"))
    gen_totals = generation.get("summary") or {}
    parts = [
        "# labbot build report",
        "",
        f"Taxonomy commit: `{taxonomy.get('sha') or 'unknown'}`"
        + (" (with uncommitted changes)" if taxonomy.get("dirty") else ""),
        f"Teacher: `{generation.get('teacher')}`; generated {gen_totals.get('generated', 0)} "
        f"samples, kept {gen_totals.get('kept', 0)}.",
        f"Phase 1: {counts.get('phase1', 0)} samples; phase 2: {counts.get('phase2', 0)} samples; "
        f"{counts.get('held_out', 0)} held-out seed questions.",
        f"Dropped {counts.get('dropped_held_out', 0)} training samples that repeated a held-out "
        "question (no leakage into evaluation; per leaf below).",
        "",
        f"**{improved} of {len(table)} leaves** score better after phase 2 than the base model.",
        "",
        "## Per-leaf results",
        "",
        leaf_table(table),
        "",
        "ROUGE-L: overlap of the model's greedy answer with the contributor's answer (higher is "
        "better). Reference loss: how unlikely the contributor's answer is under the model (lower "
        "is better). A leaf is better when its reference loss fell by at least 2% and its "
        "ROUGE-L did not drop by more than 0.05. Retention: share of phase 1's knowledge gain "
        "still present after phase 2.",
        "",
        "## Training loss",
        "",
    ]
    for name, phase in phases.items():
        parts += [mermaid_loss(name, phase.get("history", [])), ""]
    if png_name:
        parts += [f"![training loss]({png_name})", ""]
    parts += ["## Answers to held-out seed questions", "", answers_table(answers), ""]
    parts += [
        "## Data per leaf",
        "",
        "| leaf | seeds | generated | held out | dropped (copies of held-out questions) |",
        "|---|---|---|---|---|",
    ]
    for leaf, c in (counts.get("per_leaf") or {}).items():
        parts.append(
            f"| `{leaf}` | {c.get('seed', 0)} | {c.get('generated', 0)} | {c.get('held_out', 0)} "
            f"| {c.get('dropped_held_out', 0)} |"
        )
    return "\n".join(parts) + "\n"


def model_card(
    *,
    base_model: str,
    taxonomy: Mapping[str, Any],
    counts: Mapping[str, Any],
    table: Sequence[Mapping[str, Any]],
    phases: Mapping[str, Mapping[str, Any]],
) -> str:
    improved = sum(1 for r in table if r.get("improved"))

    def tokens(phase: str) -> object:
        return phases.get(phase, {}).get("tokens_trained", 0)

    front = [
        "---",
        f"base_model: {base_model}",
        "library_name: transformers",
        "license: apache-2.0",
        "tags:",
        "  - labbot",
        "  - lab-method",
        "  - instructlab-taxonomy",
        f"taxonomy_commit: {taxonomy.get('sha') or 'unknown'}",
        "labbot:",
        f"  phase1_samples: {counts.get('phase1', 0)}",
        f"  phase2_samples: {counts.get('phase2', 0)}",
        f"  held_out_questions: {counts.get('held_out', 0)}",
        f"  leaves_improved: {improved}",
        f"  leaves_evaluated: {len(table)}",
        "---",
        "",
    ]
    body = [
        "# Model built by labbot",
        "",
        f"Fine-tuned from `{base_model}` on the taxonomy at commit "
        f"`{taxonomy.get('sha') or 'unknown'}` with the LAB method's two phases: knowledge first, "
        "then skills with a replay of knowledge.",
        "",
        f"- Phase 1: {counts.get('phase1', 0)} samples, {tokens('phase 1')} tokens trained.",
        f"- Phase 2: {counts.get('phase2', 0)} samples, {tokens('phase 2')} tokens trained.",
        f"- {improved} of {len(table)} leaves answer their held-out questions better than the "
        "base model.",
        "",
        "## Per-leaf evaluation",
        "",
        leaf_table(table),
        "",
        "Files: merged weights (`model.safetensors`), the tokenizer and its chat template; "
        "the LoRA adapter, when LoRA was used, is in the run directory's `phase2/` folder.",
    ]
    return "\n".join(front + body) + "\n"
