Feature: Jobs with inference run in a pod whose only way out is the inference proxy
  A real `cynode-node run` process (inference.mode existing) on real Podman, relaying to
  the real development model (SmolLM2-135M behind the Ollama API).

  Scenario: job runs in pod with inference proxy
    Given a control plane stand-in
    And the development model backend
    And a node with inference connected to it
    When the control plane assigns inference job "INF1" running "curl -s $OLLAMA_BASE_URL/api/generate -d '{"model":"smollm2:135m","prompt":"Say hi","stream":false,"options":{"num_predict":8}}'"
    Then job "INF1" completes with model text in the "response" field
    When the control plane assigns inference job "INF2" running "curl -s --unix-socket /run/cynode-inference/proxy.sock http://proxy/api/generate -d '{"model":"smollm2:135m","prompt":"Say hi","stream":false,"options":{"num_predict":8}}'"
    Then job "INF2" completes with model text in the "response" field
    When the control plane assigns inference job "INF3" running "curl -s -o /dev/null -w '%{http_code}' $OLLAMA_BASE_URL/api/pull -d '{}'"
    Then job "INF3" completes with stdout "403"
    When the control plane assigns inference job "INF4" running "curl -sS -m 3 http://1.1.1.1/ || echo unreachable"
    Then job "INF4" completes with stdout "unreachable"
    When the control plane assigns prompt job "PR1" with prompt "Name a colour. $(touch /workspace/pwned)"
    Then job "PR1" completes with some model text
    And the node ran jobs in warm pods it made while idle
    And the node keeps only its one warm pod, no pod of a finished job
    When the node stops
    Then the node leaves no pod behind

  Scenario: sandbox env contains OLLAMA_BASE_URL
    Given a control plane stand-in
    And the development model backend
    And a node with inference connected to it
    When the control plane assigns inference job "ENV1" running "env"
    Then job "ENV1" has "OLLAMA_BASE_URL=http://localhost:11434" in its stdout
    And job "ENV1" has "INFERENCE_PROXY_URL=http+unix://%2Frun%2Fcynode-inference%2Fproxy.sock" in its stdout
    And job "ENV1" has no credential in its stdout
