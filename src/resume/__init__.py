"""resume: ReSuMe (Retriever-Summarizer Mutual Enhancement) as a Kubeflow/KServe platform component."""

__version__ = "0.1.0"
