"""Scoring predictors on labelled faces, and the evaluation report."""
