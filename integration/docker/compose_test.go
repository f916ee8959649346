package docker

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/porttest"
)

// images are what `make images` builds; the test never pulls.
var images = []string{"adclick/adclick:dev", "adclick/router:dev", "adclick/aggregator:dev", "adclick/reducer:dev"}

// compose is one docker-compose project of the adclick cluster, named for
// this test run so that it cannot touch another project's containers,
// network or volumes.
type compose struct {
	t       *testing.T
	root    string   // repository root
	project string   // docker-compose -p
	files   []string // -f, in order
	env     []string // port choices passed to docker-compose
	ports   map[string]string
}

// requireDocker skips unless the test was asked for and Docker answers, and
// fails when the images are missing.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv("ADCLICK_TEST_DOCKER") != "1" {
		t.Skip("compose cluster test: set ADCLICK_TEST_DOCKER=1 or run `make test-docker` (builds the images first)")
	}
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Skipf("compose cluster test: Docker is not available (docker info: %v)\n%s", err, lastLines(string(out), 5))
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Skip("compose cluster test: docker-compose is not installed")
	}
	for _, img := range images {
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			t.Fatalf("image %s is missing: run `make images` (images are built here, never pulled)", img)
		}
	}
}

// startCompose brings the cluster up with the test's overrides, on loopback
// ports chosen now, and tears it down (volumes included) when the test ends.
func startCompose(t *testing.T) *compose {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	c := &compose{
		t: t, root: root,
		project: fmt.Sprintf("adclick-test-%d", os.Getpid()),
		files: []string{
			filepath.Join(root, "deploy/compose/docker-compose.yaml"),
			filepath.Join(root, "integration/docker/docker-compose.test.yaml"),
		},
		ports: map[string]string{},
	}
	for _, p := range []struct{ env, name string }{
		{"ADCLICK_GRPC_PORT", "router-1"}, {"ADCLICK_HTTP_PORT", "router-1-http"},
		{"ADCLICK_TEST_ROUTER2_PORT", "router-2"},
		{"ADCLICK_TEST_RED1_PORT", "red-1"}, {"ADCLICK_TEST_RED2_PORT", "red-2"},
	} {
		addr := porttest.Addr(t)
		_, port, _ := net.SplitHostPort(addr)
		c.env = append(c.env, p.env+"="+port)
		c.ports[p.name] = addr
	}
	t.Cleanup(c.down)
	c.run(3*time.Minute, "up", "-d", "--no-build")
	return c
}

// addr is the host address (127.0.0.1:port) published for a service.
func (c *compose) addr(name string) string { return c.ports[name] }

// network is the project's private network.
func (c *compose) network() string { return c.project + "_adclick" }

func (c *compose) down() {
	if c.t.Failed() {
		out, _ := c.output(time.Minute, "logs", "--no-color", "--tail", "80")
		c.t.Logf("---- last log lines of every container ----\n%s", out)
	}
	if out, err := c.output(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		c.t.Errorf("docker-compose down: %v\n%s", err, out)
	}
}

// run runs docker-compose with the project's files and fails the test on error.
func (c *compose) run(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := c.output(timeout, args...)
	if err != nil {
		c.t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, lastLines(out, 30))
	}
	return out
}

func (c *compose) output(timeout time.Duration, args ...string) (string, error) {
	full := []string{"-p", c.project}
	for _, f := range c.files {
		full = append(full, "-f", f)
	}
	return command(timeout, c.env, "docker-compose", append(full, args...)...)
}

// container is the id of a service's container.
func (c *compose) container(service string) string {
	c.t.Helper()
	id := strings.TrimSpace(c.run(time.Minute, "ps", "-q", service))
	if id == "" {
		c.t.Fatalf("no container for service %s", service)
	}
	return id
}

// docker runs the docker CLI and fails the test on error.
func (c *compose) docker(timeout time.Duration, args ...string) string {
	c.t.Helper()
	out, err := command(timeout, nil, "docker", args...)
	if err != nil {
		c.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, lastLines(out, 30))
	}
	return out
}

// admin runs `adclick admin ARGS` in a throwaway container on the cluster's
// network, as an operator would from a machine that reaches etcd.
func (c *compose) admin(timeout time.Duration, args ...string) (string, error) {
	full := append([]string{"run", "--rm", "--network", c.network(), "adclick/adclick:dev", "admin"}, args...)
	return command(timeout, nil, "docker", full...)
}

func command(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %s)", err, timeout)
	}
	return out.String(), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
