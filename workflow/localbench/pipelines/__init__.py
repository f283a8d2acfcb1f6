"""Pipelines: chains of model stages run over the files of a user's input folder.

``plan`` decides at parse time which files run in which batch (no torch needed);
``media`` reads audio and images; ``stages`` turns one input into its engine requests
and their outputs into its text; ``batch`` runs one stage over one batch through the
inference engine, the model opened once; ``report`` renders REPORT.md and the
end-of-run summary from the batch records.
"""
