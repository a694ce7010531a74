"""Test helpers shared by the test directories: a raw MQTT socket client and paho-mqtt wrappers."""
