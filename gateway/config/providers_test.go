package config_test

// The loader knows the stream and processor kinds the providers package
// registers; this external test file links it into the package's tests
// (an import from the package's own test files would be a cycle).
import _ "github.com/vmware-samples/vmware-event-router/gateway/providers"
