"""Pixel-wise supervised contrastive loss, SCL (paper Eq. 3-5), vectorised over pixels.

The choice of pixels needs only labels and confidences, not features, so it comes first:

1. :func:`sample_contrastive_pixels` picks anchor and negative pixels and records their positions;
2. :meth:`ContrastivePixels.gather` reads those pixels from a feature map in one indexing operation:
   from the projected map, or (cheaper) from the decoder map, projecting only the gathered vectors,
   which gives the same result because the projector acts on each pixel alone;
3. :func:`supervised_contrastive_loss` computes the loss, optionally with other positive keys for some
   anchors (REPS asks for them with ``anchor_positions_byx``).

Per class c present in the batch (labels: ground truth or the other branch's argmax):

- anchor pool A_c: pixels labelled c whose top-1 probability exceeds the threshold; up to
  ``anchors_per_class`` anchors are drawn from it without replacement;
- positive key of anchor a_i: the mean of the other sampled anchors of class c, ``(sum - a_i) / (n_c - 1)``,
  scaled to unit length (every logit is then a cosine similarity over the temperature). When A_c holds
  at most ``anchors_per_class`` pixels this is exactly the leave-one-out mean of A_c (Eq. 5); otherwise
  an unbiased estimate of it from that many random members, which spares projecting every pixel;
- negatives: ``negatives_per_class`` split evenly over the other classes that have candidate pixels (the
  remainder one each to the lowest class indices); a class with fewer candidates gives all it has and
  the shortfall is not handed to other classes, so that no class dominates the negatives;
- loss of anchor i: ``-log(exp(a_i.p_i/tau) / (exp(a_i.p_i/tau) + sum_n exp(a_i.n/tau)))``.

Classes with fewer than 2 anchors or no negatives are skipped; the loss is the mean over anchors within a
class, then over the classes used (skipped classes do not dilute it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cctrnet.training.losses.dice_ce import IGNORE_INDEX


@dataclass(frozen=True)
class ContrastiveSettings:
    probability_threshold: float = 0.5  # h in Eq. 3
    anchors_per_class: int = 1000  # N
    negatives_per_class: int = 500  # O
    temperature: float = 0.1  # tau
    confident_negatives: bool = True  # draw negatives only from confident pixels of the other classes
    detach_positive_keys: bool = True  # class means act as targets, like the bank's registered keys
    ignore_index: int = IGNORE_INDEX  # pixels with this label are never anchors or negatives


@dataclass
class ContrastivePixels:
    """Chosen pixels of a batch (b, h, w): anchors grouped by class in ascending order, then negatives."""

    batch_shape_bhw: tuple[int, int, int]
    anchor_flat: torch.Tensor  # (n,) long, flat index into b*h*w
    negative_flat: torch.Tensor  # (o,) long
    anchor_classes: torch.Tensor  # (n,) long
    negative_classes: torch.Tensor  # (o,) long
    class_ids: list[int]  # classes used, ascending
    anchor_counts: list[int]  # anchors per used class
    negative_counts: list[int]  # negatives per used class

    @property
    def n_anchors(self) -> int:
        return int(self.anchor_flat.shape[0])

    @property
    def anchor_positions_byx(self) -> torch.Tensor:
        """(n, 3) long: batch index, y, x of each anchor."""
        return _flat_to_byx(self.anchor_flat, self.batch_shape_bhw)

    @property
    def negative_positions_byx(self) -> torch.Tensor:
        return _flat_to_byx(self.negative_flat, self.batch_shape_bhw)

    def gather(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchor vectors (n, c), negative vectors (o, c)) read from a map (b, c, h, w), graph kept."""
        b, h, w = self.batch_shape_bhw
        if feature_map.ndim != 4 or (feature_map.shape[0], *feature_map.shape[2:]) != (b, h, w):
            raise ValueError(f"feature map must be (b, c, h, w) with (b, h, w) = {(b, h, w)}, got {tuple(feature_map.shape)}")
        flat = torch.cat([self.anchor_flat, self.negative_flat]).to(feature_map.device)
        # a single gather: its backward writes the map-sized gradient once
        vectors = feature_map.reshape(b, feature_map.shape[1], h * w)[flat // (h * w), :, flat % (h * w)]
        return vectors[: self.n_anchors], vectors[self.n_anchors :]


def _flat_to_byx(flat: torch.Tensor, shape_bhw: tuple[int, int, int]) -> torch.Tensor:
    _, h, w = shape_bhw
    return torch.stack([flat // (h * w), (flat % (h * w)) // w, flat % w], dim=1)


def _shuffled(indices: torch.Tensor, keep: int, generator: torch.Generator | None) -> torch.Tensor:
    """Up to ``keep`` entries of ``indices`` in random order (without replacement)."""
    generator_device = generator.device if generator is not None else indices.device
    order = torch.randperm(int(indices.shape[0]), generator=generator, device=generator_device).to(indices.device)
    return indices[order[:keep]]


def _negative_quota(n_total: int, other_classes: list[int]) -> dict[int, int]:
    """Split n_total evenly over other_classes, the remainder one each to the first classes."""
    if not other_classes:
        return {}
    share, remainder = divmod(n_total, len(other_classes))
    return {c: share + (1 if k < remainder else 0) for k, c in enumerate(other_classes)}


def sample_contrastive_pixels(
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    settings: ContrastiveSettings = ContrastiveSettings(),
    generator: torch.Generator | None = None,
) -> ContrastivePixels:
    """Choose anchor and negative pixels from labels (b, h, w) and top-1 probabilities (b, h, w).

    ``generator`` makes the choice reproducible (any device; indices end on the labels' device).
    """
    if labels.ndim != 3 or tuple(probabilities.shape) != tuple(labels.shape):
        raise ValueError(
            f"labels and probabilities must both be (b, h, w), got {tuple(labels.shape)} and {tuple(probabilities.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    device = labels.device
    labels_flat = labels.reshape(-1).long()
    labelled = labels_flat != settings.ignore_index
    if bool((labelled & (labels_flat < 0)).any()):
        raise ValueError(f"labels must be >= 0 or ignore_index={settings.ignore_index}")
    confident = labelled & (probabilities.reshape(-1).to(device) > settings.probability_threshold)
    n_classes = int(labels_flat[labelled].max()) + 1 if bool(labelled.any()) else 0

    pool_counts = torch.bincount(labels_flat[confident], minlength=n_classes).tolist()
    if settings.confident_negatives:
        candidate_counts = pool_counts
    else:
        candidate_counts = torch.bincount(labels_flat[labelled], minlength=n_classes).tolist()
    negative_classes = [c for c in range(n_classes) if candidate_counts[c] > 0]
    class_ids = [c for c in range(n_classes) if pool_counts[c] >= 2 and any(j != c for j in negative_classes)]

    empty = torch.zeros((0,), dtype=torch.long, device=device)
    if not class_ids:
        return ContrastivePixels(tuple(labels.shape), empty, empty, empty, empty, [], [], [])

    # One shuffle per class serves both its anchors and its use as negatives of the other classes.
    keep = max(settings.anchors_per_class, settings.negatives_per_class)
    anchor_order: dict[int, torch.Tensor] = {}
    negative_order: dict[int, torch.Tensor] = {}
    for c in sorted(set(class_ids) | set(negative_classes)):
        if pool_counts[c] > 0:
            anchor_order[c] = _shuffled(torch.nonzero(confident & (labels_flat == c)).squeeze(1), keep, generator)
        if settings.confident_negatives:
            negative_order[c] = anchor_order[c]
        elif candidate_counts[c] > 0:
            candidates = torch.nonzero(labelled & (labels_flat == c)).squeeze(1)
            negative_order[c] = _shuffled(candidates, settings.negatives_per_class, generator)

    anchor_indices, negative_indices = [], []
    for c in class_ids:
        anchor_indices.append(anchor_order[c][: settings.anchors_per_class])
        quota = _negative_quota(settings.negatives_per_class, [j for j in negative_classes if j != c])
        negative_indices.append(torch.cat([negative_order[j][:q] for j, q in quota.items()]))
    anchor_flat, negative_flat = torch.cat(anchor_indices), torch.cat(negative_indices)
    return ContrastivePixels(
        batch_shape_bhw=tuple(labels.shape),
        anchor_flat=anchor_flat,
        negative_flat=negative_flat,
        anchor_classes=labels_flat[anchor_flat],
        negative_classes=labels_flat[negative_flat],
        class_ids=class_ids,
        anchor_counts=[int(a.shape[0]) for a in anchor_indices],
        negative_counts=[int(n.shape[0]) for n in negative_indices],
    )


def class_positive_keys(
    anchor_features: torch.Tensor, pixels: ContrastivePixels, detach: bool = ContrastiveSettings.detach_positive_keys
) -> torch.Tensor:
    """Unit-length leave-one-out mean of the anchors of each anchor's class (Eq. 5), (n, d)."""
    if detach:
        anchor_features = anchor_features.detach()
    counts = torch.tensor(pixels.anchor_counts, device=anchor_features.device)
    group = torch.repeat_interleave(torch.arange(len(pixels.anchor_counts), device=anchor_features.device), counts)
    class_sums = torch.zeros((len(pixels.anchor_counts), anchor_features.shape[1]), device=anchor_features.device,
                             dtype=anchor_features.dtype).index_add(0, group, anchor_features)
    others = (class_sums[group] - anchor_features) / (counts[group] - 1).unsqueeze(1).to(anchor_features.dtype)
    return F.normalize(others, dim=1)


def supervised_contrastive_loss(
    anchor_features: torch.Tensor,
    negative_features: torch.Tensor,
    pixels: ContrastivePixels,
    settings: ContrastiveSettings = ContrastiveSettings(),
    positive_override: torch.Tensor | None = None,
    override_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_c (Eq. 4) from unit vectors of the chosen pixels; 0 (with a graph) when no class is used.

    ``positive_override`` (n, d) replaces the class positive key where ``override_mask`` (n,) is true
    (all anchors when no mask is given); both follow the anchor order of ``pixels`` (REPS, Eq. 13).
    """
    n = pixels.n_anchors
    if anchor_features.shape[0] != n or negative_features.shape[0] != sum(pixels.negative_counts):
        raise ValueError(
            f"expected {n} anchor and {sum(pixels.negative_counts)} negative vectors, "
            f"got {tuple(anchor_features.shape)} and {tuple(negative_features.shape)}"
        )
    if n == 0:
        return anchor_features.sum() * 0.0 + negative_features.sum() * 0.0
    positives = class_positive_keys(anchor_features, pixels, settings.detach_positive_keys)
    if positive_override is not None:
        if override_mask is None:
            override_mask = torch.ones(n, dtype=torch.bool, device=positives.device)
        if tuple(positive_override.shape) != tuple(positives.shape) or tuple(override_mask.shape) != (n,):
            raise ValueError(
                f"positive_override must be {tuple(positives.shape)} with a mask ({n},), "
                f"got {tuple(positive_override.shape)} and {tuple(override_mask.shape)}"
            )
        positives = torch.where(override_mask.to(positives.device).unsqueeze(1), positive_override.to(positives), positives)

    scaled_anchors = anchor_features / settings.temperature  # cheaper than scaling every (n_c, o_c) logit
    positive_logits = (scaled_anchors * positives).sum(1)  # (n,)
    class_losses = []
    anchor_start = negative_start = 0
    for anchor_count, negative_count in zip(pixels.anchor_counts, pixels.negative_counts):
        anchors = scaled_anchors[anchor_start : anchor_start + anchor_count]
        negatives = negative_features[negative_start : negative_start + negative_count]
        positive = positive_logits[anchor_start : anchor_start + anchor_count]
        logits = torch.cat([positive.unsqueeze(1), anchors @ negatives.t()], dim=1)
        class_losses.append((torch.logsumexp(logits, dim=1) - positive).mean())
        anchor_start += anchor_count
        negative_start += negative_count
    return torch.stack(class_losses).mean()


def contrastive_loss_from_map(
    features: torch.Tensor,
    labels: torch.Tensor,
    probabilities: torch.Tensor,
    settings: ContrastiveSettings = ContrastiveSettings(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SCL without REPS from a projected map (b, d, h, w) of unit vectors: sample, gather, loss."""
    pixels = sample_contrastive_pixels(labels.to(features.device), probabilities.to(features.device), settings, generator)
    anchors, negatives = pixels.gather(features)
    return supervised_contrastive_loss(anchors, negatives, pixels, settings)
