"""The local cluster: shell scripts that start and stop it, and the job runner
(`cluster.job_runner`), a Python package so that its tests import it as any other module."""
