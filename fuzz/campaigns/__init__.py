"""The campaigns; importing this package registers every one (see :data:`base.REGISTRY`)."""

from fuzz.campaigns import apps, channels, code, fullvirt, hypercalls, lifecycle, linux, native, noninterference

__all__ = ["apps", "channels", "code", "fullvirt", "hypercalls", "lifecycle", "linux", "native", "noninterference"]
