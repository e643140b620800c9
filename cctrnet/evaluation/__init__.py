"""Evaluation stage of the cctrnet pipeline: Dice and HD95 in mm per case and class, folder summaries."""
from cctrnet.evaluation.evaluate_folder import evaluate_folders
from cctrnet.evaluation.metrics import EvaluationConventions, dice_score, evaluate_case, hd95_mm

__all__ = ["EvaluationConventions", "dice_score", "evaluate_case", "evaluate_folders", "hd95_mm"]
