// health-check reads RollbackRequests and tells what the GitOps tools would say of each: the
// kstatus verdict (sigs.k8s.io/cli-utils, the library Flux and kubectl-adjacent tools use), the
// Argo CD health of a Lua health check run by gopher-lua (the interpreter Argo CD embeds) and,
// when given, the verdict of Flux healthCheckExprs evaluated with cel-go as Flux does (RFC 0009:
// observedGeneration first, then inProgress, failed, current; none true means InProgress).
//
// Input on stdin, JSON: {"lua": "<script>", "flux": {"current": .., "inProgress": .., "failed": ..},
// "objects": [<RollbackRequest>, ...]}. Output on stdout, JSON: one verdict per object, in order.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type input struct {
	Lua     string            `json:"lua"`
	Flux    map[string]string `json:"flux"`
	Objects []json.RawMessage `json:"objects"`
}

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

type result struct {
	Kstatus verdict  `json:"kstatus"`
	ArgoCD  *verdict `json:"argocd,omitempty"`
	Flux    *verdict `json:"flux,omitempty"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "reading the input:", err)
		os.Exit(2)
	}
	var out []result
	for _, raw := range in.Objects {
		// Decoded as the API machinery decodes objects (integers as int64), as in the tools.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			fmt.Fprintln(os.Stderr, "reading an object:", err)
			os.Exit(2)
		}
		obj := u.Object
		r := result{Kstatus: kstatus(obj)}
		if in.Lua != "" {
			v := argocd(in.Lua, obj)
			r.ArgoCD = &v
		}
		if len(in.Flux) > 0 {
			v := flux(in.Flux, obj)
			r.Flux = &v
		}
		out = append(out, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "writing the output:", err)
		os.Exit(2)
	}
}

func kstatus(obj map[string]interface{}) verdict {
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return verdict{Error: err.Error()}
	}
	return verdict{Status: res.Status.String(), Message: res.Message}
}

// argocd runs the health check as Argo CD does: the object as the global `obj`, the script's
// returned table read for `status` and `message`.
func argocd(script string, obj map[string]interface{}) verdict {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return verdict{Error: err.Error()}
	}
	table, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return verdict{Error: "the health check returned no table"}
	}
	return verdict{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}
}

func toLua(L *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		t := L.NewTable()
		for key, item := range v {
			t.RawSetString(key, toLua(L, item))
		}
		return t
	case []interface{}:
		t := L.NewTable()
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	}
	return lua.LString(fmt.Sprint(value))
}

// flux evaluates healthCheckExprs with the environment of fluxcd/pkg/runtime/cel.
func flux(exprs map[string]string, obj map[string]interface{}) verdict {
	generation, hasGeneration, _ := unstructured.NestedInt64(obj, "metadata", "generation")
	observed, hasObserved, _ := unstructured.NestedInt64(obj, "status", "observedGeneration")
	if hasGeneration && hasObserved && observed != generation {
		return verdict{Status: "InProgress", Message: "generation not observed"}
	}
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	for _, step := range []struct{ key, status string }{
		{"inProgress", "InProgress"}, {"failed", "Failed"}, {"current", "Current"},
	} {
		expr := exprs[step.key]
		if expr == "" {
			continue
		}
		ast, issues := env.Parse(expr)
		if issues != nil && issues.Err() != nil {
			return verdict{Error: fmt.Sprintf("%s: %v", step.key, issues.Err())}
		}
		program, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			return verdict{Error: fmt.Sprintf("%s: %v", step.key, err)}
		}
		value, _, err := program.ContextEval(context.Background(), obj)
		if err != nil {
			return verdict{Error: fmt.Sprintf("%s: %v", step.key, err)}
		}
		if b, ok := value.(types.Bool); !ok {
			return verdict{Error: fmt.Sprintf("%s: not a boolean", step.key)}
		} else if b {
			return verdict{Status: step.status}
		}
	}
	return verdict{Status: "InProgress", Message: "no expression was true"}
}
