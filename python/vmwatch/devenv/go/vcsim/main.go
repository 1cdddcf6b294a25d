// SPDX-License-Identifier: Apache-2.0

// Command vmwatch-vcsim starts govmomi's vCenter simulator (the published
// github.com/vmware/govmomi/simulator package, pinned in go.mod) on 127.0.0.1
// for vmwatch's tests, demo and benchmarks. govmomi v0.56.0 ships its own vcsim
// command as a nested module that the module proxy does not serve, so vmwatch
// builds this small launcher over the same simulator package instead.
//
// Once the server answers it prints one JSON line on stdout:
//
//	{"url": "https://user:pass@127.0.0.1:PORT/sdk", "pid": N, "cert_file": "...", "thumbprint_sha256": "AA:BB:..."}
//
// and runs until SIGINT/SIGTERM or until stdin closes (with -stdinexit).
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

type startup struct {
	URL        string `json:"url"`
	PID        int    `json:"pid"`
	CertFile   string `json:"cert_file,omitempty"`
	Thumbprint string `json:"thumbprint_sha256,omitempty"`
	VMs        int    `json:"vms"`
}

func parseMethodDelay(spec string) (map[string]int, error) {
	delays := map[string]int{}
	if spec == "" {
		return delays, nil
	}
	for _, item := range strings.Split(spec, ",") {
		method, ms, ok := strings.Cut(strings.TrimSpace(item), ":")
		if !ok {
			return nil, fmt.Errorf("-method-delay: %q is not Method:ms", item)
		}
		n, err := strconv.Atoi(ms)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-method-delay: %q: delay must be a whole number of ms", item)
		}
		delays[method] = n
	}
	return delays, nil
}

func thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func main() {
	model := simulator.VPX()

	listen := flag.String("l", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	username := flag.String("username", "", "accepted login user (empty: any non-empty user)")
	password := flag.String("password", "", "accepted login password (empty: any non-empty password)")
	useTLS := flag.Bool("tls", true, "serve HTTPS")
	stdinExit := flag.Bool("stdinexit", false, "exit when stdin closes")
	methodDelay := flag.String("method-delay", "", "per-method delay, e.g. 'WaitForUpdatesEx:100,RetrieveProperties:5'")
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts per datacenter")
	flag.IntVar(&model.Machine, "vm", model.Machine, "VMs per resource pool")
	flag.IntVar(&model.Pool, "pool", model.Pool, "child resource pools per cluster")
	flag.IntVar(&model.Folder, "folder", model.Folder, "folders per datacenter")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "datastores")
	flag.IntVar(&model.Portgroup, "pg", model.Portgroup, "distributed port groups per datacenter")
	flag.BoolVar(&model.Autostart, "autostart", model.Autostart, "power on the model's VMs")
	flag.IntVar(&model.DelayConfig.Delay, "delay", 0, "delay in ms for every SOAP call")
	flag.Float64Var(&model.DelayConfig.DelayJitter, "delay-jitter", 0, "delay jitter as stddev/mean")
	flag.Parse()

	delays, err := parseMethodDelay(*methodDelay)
	if err != nil {
		log.Fatal(err)
	}
	model.DelayConfig.MethodDelay = delays

	if err := model.Create(); err != nil {
		log.Fatalf("creating the model: %v", err)
	}
	defer model.Remove()

	u := &url.URL{Host: *listen}
	if *username != "" || *password != "" {
		u.User = url.UserPassword(*username, *password)
	}
	model.Service.Listen = u
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	model.Service.RegisterEndpoints = true

	server := model.Service.NewServer()
	defer server.Close()

	out := startup{URL: server.URL.String(), PID: os.Getpid(), VMs: model.Count().Machine}
	if *useTLS {
		certFile, err := server.CertificateFile()
		if err != nil {
			log.Fatalf("writing the certificate: %v", err)
		}
		out.CertFile = certFile
		out.Thumbprint = thumbprint(server.Certificate().Raw)
	}
	line, err := json.Marshal(out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	if *stdinExit {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}
	<-stop
}
