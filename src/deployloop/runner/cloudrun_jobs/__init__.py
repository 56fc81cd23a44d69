"""`[tests] executor = "cloudrun-jobs"`: the tests of an iteration run as the tasks of one Cloud
Run Jobs execution, inside the project's network, instead of as pytest processes here.

loop splits the pending tests into one share per task by recorded duration (shares.py),
writes the shares to the results bucket, creates or updates the job and runs an execution
(job.py); each task runs `python -m deployloop.task` on its share and streams loop's
reportlog to the bucket every few seconds; loop reads it back while the execution runs
(executor.py) and records results exactly as the local runner does. layout.py names the
objects both sides read and write.
"""
