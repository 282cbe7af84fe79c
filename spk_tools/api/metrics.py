"""QoS as Prometheus metrics: the controller's latest view in the text exposition format."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spgs.control_view import STATES, View


class _ViewCollector(Collector):
    def __init__(self, view: View) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view
        system = view.system
        yield GaugeMetricFamily("spk_virtual_time_ticks", "Virtual time (instructions)", value=system["now"])
        yield CounterMetricFamily("spk_major_frames", "Major frames run", value=system["major_frames"])
        yield CounterMetricFamily("spk_api_mutations", "Mutations applied through the API", value=system["mutations"])
        gauges = {
            "cpu_share": ("spk_partition_cpu_share", "Instructions in the last major frame / the frame"),
            "allocated_share": ("spk_partition_allocated_share", "Window time / the major frame"),
            "window_use": ("spk_partition_window_use", "Fraction of its window time used since boot"),
            "last_frame_use": ("spk_partition_last_frame_use", "Fraction of its window time used, last frame"),
            "frames_used": ("spk_partition_frames_used", "Memory frames in use"),
            "quota_frames": ("spk_partition_quota_frames", "Memory frames of its quota"),
        }
        counters = {
            "overruns": ("spk_partition_overruns", "Windows that ended with it still running"),
            "health_events": ("spk_partition_health_events", "Health events"),
            "windows": ("spk_partition_windows", "Windows given"),
        }
        for key, (name, doc) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["partition"])
            for p in view.partitions:
                family.add_metric([p["name"]], p["qos"][key])
            yield family
        for key, (name, doc) in counters.items():
            counter = CounterMetricFamily(name, doc, labels=["partition"])
            for p in view.partitions:
                counter.add_metric([p["name"]], p["qos"][key])
            yield counter
        restarts = CounterMetricFamily("spk_partition_restarts", "Restarts", labels=["partition"])
        instructions = CounterMetricFamily("spk_partition_instructions", "Instructions run", labels=["partition"])
        state = GaugeMetricFamily("spk_partition_state", "1 for the partition's state", labels=["partition", "state"])
        for p in view.partitions:
            restarts.add_metric([p["name"]], p["restarts"])
            instructions.add_metric([p["name"]], p["counters"]["instructions"])
            for s in STATES:
                state.add_metric([p["name"], s], 1.0 if p["state"] == s else 0.0)
        yield from (restarts, instructions, state)
        sent = CounterMetricFamily("spk_channel_messages_sent", "Messages sent", labels=["channel"])
        rate = GaugeMetricFamily("spk_channel_rate", "Messages sent in the last major frame", labels=["channel"])
        for name, channel in view.qos["channels"].items():
            sent.add_metric([name], channel["sent"])
            rate.add_metric([name], channel["rate"])
        yield from (sent, rate)


def metrics_text(view: View) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ViewCollector(view))
    return generate_latest(registry).decode()
