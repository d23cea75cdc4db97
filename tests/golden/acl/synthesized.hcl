# synthetic policy for service identity "web" (datacenters: dc1)
service "web" {
	policy = "write"
}
service "web-sidecar-proxy" {
	policy = "write"
}
service_prefix "" {
	policy = "read"
}
node_prefix "" {
	policy = "read"
}
# synthetic policy for node identity "node-1" (datacenters: dc1)
node "node-1" {
	policy = "write"
}
service_prefix "" {
	policy = "read"
}
