package lua_test

import (
	"github.com/Shopify/go-lua"
)

// averageAndSum receives a variable number of numerical arguments and returns their average and sum.
func averageAndSum(l *lua.State) int {
	n := l.Top() // Number of arguments.
	var sum float64
	for i := 1; i <= n; i++ {
		f, ok := l.ToNumber(i)
		if !ok {
			l.PushString("incorrect argument")
			l.Error()
		}
		sum += f
	}
	l.PushNumber(sum / float64(n)) // First result.
	l.PushNumber(sum)              // Second result.
	return 2                       // Result count.
}

// This example registers a Go function that receives a variable number of
// numerical arguments and returns their average and sum.
func Example_function() {
	l := lua.NewState()
	lua.BaseOpen(l)
	l.Register("average", averageAndSum)
	if err := lua.DoString(l, "print(average(1, 2, 3, 6))"); err != nil {
		panic(err)
	}
	// Output: 3	12
}
