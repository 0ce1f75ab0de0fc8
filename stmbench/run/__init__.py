"""Running: one run through the pipeline (data, model, training, prediction, scoring), and the study
driver that hands a plan's runs to an executor and stores each outcome.
"""
