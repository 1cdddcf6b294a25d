// SPDX-License-Identifier: Apache-2.0

// Command govmomi_decode decodes raw WaitForUpdatesEx response bodies with govmomi's own SOAP
// decoder (vim25/xml with the vim25 type registry, exactly what soap.Client does with a
// response) and prints one JSON line per file with the median time of N runs.
//
//	go run . -n 20 FILE...   (FILE may end in .gz)
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

type result struct {
	File      string    `json:"file"`
	Bytes     int       `json:"bytes"`
	Objects   int       `json:"objects"`
	Changes   int       `json:"changes"`
	Runs      int       `json:"runs"`
	MedianS   float64   `json:"median_s"`
	MBPerS    float64   `json:"mb_per_s"`
	Samples   []float64 `json:"samples_s"`
	Fault     string    `json:"fault,omitempty"`
	GoVersion string    `json:"go_version"`
}

// decode is what soap.Client.RoundTrip does with a response body.
func decode(body []byte) (objects, changes int, fault string, err error) {
	var res methods.WaitForUpdatesExBody
	env := soap.Envelope{Body: &res}
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.TypeFunc = types.TypeFunc()
	if err = dec.Decode(&env); err != nil {
		return 0, 0, "", err
	}
	if f := res.Fault(); f != nil {
		return 0, 0, fmt.Sprintf("%T", f.VimFault()), nil
	}
	if res.Res != nil && res.Res.Returnval != nil {
		for _, fs := range res.Res.Returnval.FilterSet {
			for _, o := range fs.ObjectSet {
				objects++
				changes += len(o.ChangeSet)
			}
		}
	}
	return objects, changes, "", nil
}

func read(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil || !strings.HasSuffix(path, ".gz") {
		return b, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func main() {
	n := flag.Int("n", 10, "runs per file")
	flag.Parse()
	enc := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		body, err := read(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r := result{File: path, Bytes: len(body), Runs: *n, GoVersion: runtime.Version()}
		for i := 0; i < *n; i++ {
			runtime.GC()
			start := time.Now()
			objects, changes, fault, err := decode(body)
			elapsed := time.Since(start).Seconds()
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
				os.Exit(2)
			}
			r.Objects, r.Changes, r.Fault = objects, changes, fault
			r.Samples = append(r.Samples, elapsed)
		}
		s := append([]float64(nil), r.Samples...)
		sort.Float64s(s)
		r.MedianS = s[len(s)/2]
		r.MBPerS = float64(len(body)) / r.MedianS / 1e6
		if err := enc.Encode(r); err != nil {
			os.Exit(1)
		}
	}
}
