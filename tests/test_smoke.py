from tests.conftest import submission


def test_submit_and_read_back(alice_client, catalog):
    response = alice_client.post("/batches", submission(catalog), format="json")
    assert response.status_code == 201, response.content
    batch_id = response.json()["batch_id"]
    assert alice_client.get(f"/batches/{batch_id}").json()["submitted"] == 2
    jobs = alice_client.get(f"/batches/{batch_id}/jobs").json()
    assert [j["job_argument_list"] for j in jobs] == [
        [{"argument_key": "message", "argument_value": "hello"}],
        [{"argument_key": "message", "argument_value": "world"}],
    ]
    detail = alice_client.get(f"/batches/{batch_id}/jobs/{jobs[0]['job_id']}").json()
    assert detail["status"] == "SUBMITTED"
