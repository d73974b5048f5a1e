"""The development cluster: a real control plane on loopback (controlplane.py, built from source by build.sh),
a pod runner that plays the kubelet (podrunner.py), and the operator on them (cluster.py), for `make demo`,
the tests and the benchmarks. Not part of the product: nothing under operator/ or trainer-image/ imports it."""
