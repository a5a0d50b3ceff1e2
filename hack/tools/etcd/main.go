// Command etcd is etcd's own server entry point, built at the version pinned
// in this module so the test control plane needs nothing installed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
