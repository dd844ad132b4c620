"""Evaluation of trained models: bounds, importance-sampled NLL."""

from vaelab.evaluation.nll import evaluate_model, log_likelihood, summarize_nll, test_bound

__all__ = ["evaluate_model", "log_likelihood", "summarize_nll", "test_bound"]
