// Package deploy holds the Kubernetes manifests (event-router-k8s.yaml,
// kustomization.yaml) and the example config files that go into the
// event-router-config Secret. It has no Go code: its tests decode every
// manifest strictly into the Kubernetes API types and check the manifests,
// the Dockerfile and the example configs against each other.
package deploy
