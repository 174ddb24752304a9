"""Creates a log group and stream (if needed) on a CloudWatch Logs endpoint
(moto in the tests) with boto3 and puts Lambda platform lines for
invocations FIRST..FIRST+COUNT-1 of FUNCTION. Prints the request ids.

usage: cloudwatch_put.py ENDPOINT GROUP FIRST COUNT
"""
import json
import sys
import time

import boto3


def main():
    endpoint, group, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    logs = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = "2026/11/28/[$LATEST]94fa867e5374431291a7fc14e2f56ae7"
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    now = int(time.time() * 1000)
    events, ids = [], []
    for i in range(first, first + count):
        rid = f"00000000-0000-4000-8000-{i:012d}"
        ids.append(rid)
        events.append({"timestamp": now, "message": f"START RequestId: {rid} Version: $LATEST"})
        events.append({"timestamp": now, "message": f"REPORT RequestId: {rid}\tDuration: {10 + i}.50 ms\tBilled Duration: {11 + i} ms\tMemory Size: 256 MB\tMax Memory Used: 64 MB\t"})
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
