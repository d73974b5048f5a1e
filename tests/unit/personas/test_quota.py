"""Quota refusals turned into a condition users understand."""

from floe_operator.builders.quota import parse_quota_error, quota_problem

JOB_REFUSAL = (
    'Error creating: pods "t5-news-0-abcde" is forbidden: exceeded quota: floe, '
    "requested: requests.cpu=4,requests.nvidia.com/gpu=8, "
    "used: requests.cpu=2,requests.nvidia.com/gpu=2, limited: requests.cpu=4,requests.nvidia.com/gpu=4"
)
STATEFULSET_REFUSAL = (
    'create Pod notebook-0 in StatefulSet notebook failed error: pods "notebook-0" is forbidden: '
    "exceeded quota: floe, requested: requests.memory=32Gi, used: requests.memory=0, "
    "limited: requests.memory=16Gi"
)


def test_exceeded_quota_names_quota_and_each_short_resource():
    problem = parse_quota_error(JOB_REFUSAL)
    assert problem.quota == "floe"
    assert problem.message == (
        "ResourceQuota floe is exceeded: requests.cpu used 2, asked 4, limit 4; "
        "requests.nvidia.com/gpu used 2, asked 8, limit 4. Pods are created once the quota "
        "allows it (raise the Project's spec.quota or free capacity)"
    )


def test_statefulset_wording_is_understood_too():
    problem = parse_quota_error(STATEFULSET_REFUSAL)
    assert [(s.resource, s.used, s.asked, s.limit) for s in problem.shortfalls] == [
        ("requests.memory", "0", "32Gi", "16Gi")
    ]


def test_quota_that_needs_requests_the_pod_lacks():
    problem = parse_quota_error(
        'Error creating: pods "x" is forbidden: failed quota: floe: must specify limits.cpu for: trainer'
    )
    assert problem.quota == "floe"
    assert "requires limits.cpu for: trainer" in problem.message


def test_other_refusals_are_not_quota_problems():
    assert parse_quota_error('pods "x" is forbidden: violates PodSecurity "restricted:latest"') is None


def event(reason, message, timestamp, version):
    return {
        "reason": reason,
        "message": message,
        "lastTimestamp": timestamp,
        "metadata": {"resourceVersion": str(version)},
    }


def test_missing_pod_with_latest_refusal_by_quota_is_exceeded():
    events = [event("FailedCreate", JOB_REFUSAL, "2026-01-01T10:00:05Z", 40)]
    assert quota_problem(1, 0, events).quota == "floe"


def test_all_pods_created_means_recovered_even_with_old_refusals():
    events = [event("FailedCreate", JOB_REFUSAL, "2026-01-01T10:00:05Z", 40)]
    assert quota_problem(1, 1, events) is None


def test_a_later_successful_creation_wins_over_an_earlier_refusal_in_the_same_second():
    events = [
        event("SuccessfulCreate", "Created pod: t5-news-0-abcde", "2026-01-01T10:00:05Z", 42),
        event("FailedCreate", JOB_REFUSAL, "2026-01-01T10:00:05Z", 41),
    ]
    assert quota_problem(2, 1, events) is None


def test_refusals_for_other_reasons_are_not_reported_as_quota():
    events = [event("FailedCreate", "Error creating: admission webhook denied", "2026-01-01T10:00:05Z", 9)]
    assert quota_problem(1, 0, events) is None
    assert quota_problem(1, 0, []) is None
