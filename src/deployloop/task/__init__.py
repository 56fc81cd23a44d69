"""What runs inside each task of a Cloud Run Jobs execution: `python -m deployloop.task`.

It reads its share of the tests from the results bucket (by CLOUD_RUN_TASK_INDEX), runs
pytest on it with loop's plugin, and uploads what the plugin writes every few seconds, so
loop sees results while the execution runs and a task killed mid-way loses only the tests
it had not finished. See deployloop.runner.cloudrun_jobs.
"""
