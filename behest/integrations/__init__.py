"""Agent SDKs recorded as behest runs, each an optional extra with its own module:

- `behest.integrations.openai_agents` — the OpenAI Agents SDK (`behest[openai-agents]`)
- `behest.integrations.langchain` — LangChain / LangGraph callbacks (`behest[langchain]`)

Importing this package imports no SDK.
"""
