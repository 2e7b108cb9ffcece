"""The InfluxDB worker: reads series windows, scores them through the server, writes scores back."""
