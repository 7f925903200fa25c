// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 for skiff's
// integration tests (tests/kube/env.sh build); it is etcd's own main, nothing more.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
