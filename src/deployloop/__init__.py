"""deployloop: the test-deploy loop for services on Google Cloud Run."""

__version__ = "0.1.0"
