"""Root conftest: the Kafka broker fixtures every test tree shares."""

pytest_plugins = ["tests.support.broker"]
