"""The code that runs inside every worker: an AWS Lambda function or a local worker process."""
