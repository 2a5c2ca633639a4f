"""Scoring predictors on labelled faces, and the evaluation report.

``scoring`` (metrics, class sets, the ``Predictor`` API and its registry), ``cot_quality``
(wording checks of CoT texts), the predictors: ``file_peers`` (csv, gpt4v), ``rules_peer``
(rules), ``classifiers`` (nano, fer, on ``face_batches``), ``expllm_peer`` (expllm); ``report``
(metrics.json, predictions.csv, confusion.png, report.md/html).
"""
