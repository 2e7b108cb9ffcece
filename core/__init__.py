"""Torch-free pieces shared by the server, the client and the InfluxDB task.

Metrics, the demo-data generator and conversions between numpy and stad.v1
messages live here, so that the client side never needs torch.
"""
