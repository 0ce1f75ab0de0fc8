"""Stored results: :class:`~stmbench.store.result.RunResult` (the record), :class:`~stmbench.store.results.ResultStore`
(one JSON file per run, atomic) and the schema checks a stored file must pass (:mod:`~stmbench.store.verify`).
"""
