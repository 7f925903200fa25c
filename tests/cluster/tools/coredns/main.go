// Command coredns is CoreDNS (github.com/coredns/coredns) with only the plugins a
// cluster's DNS needs, built from the Go module proxy for skiff's local cluster
// (tests/cluster/env.sh build): the kubernetes plugin answers for Services and Pods, and
// nothing is forwarded (the cluster has no route out of the machine).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The plugins above, in CoreDNS's own order (core/dnsserver/zdirectives.go).
var plugins = map[string]bool{
	"cache": true, "errors": true, "health": true, "kubernetes": true,
	"loadbalance": true, "log": true, "ready": true,
}

func init() {
	var order []string
	for _, d := range dnsserver.Directives {
		if plugins[d] {
			order = append(order, d)
		}
	}
	dnsserver.Directives = order
}

func main() {
	coremain.Run()
}
