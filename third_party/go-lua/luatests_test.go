package lua

import (
	"os"
	"testing"
)

// requireLuaTests skips t when the lua-tests git submodule of upstream
// go-lua is absent: it is not vendored in this patched copy (PATCHES.md).
func requireLuaTests(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("lua-tests"); err != nil {
		t.Skipf("the lua-tests submodule is not vendored in this copy: %s", err)
	}
}
