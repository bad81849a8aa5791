"""The `behest` command's commands (`simulate`, `project`, `serve`, `state`, `watch`, `demo`)
and subcommand groups (`broker`, `topics`, `dlq`, `generations`), which `behest.cli`
assembles: they parse and print; the logic lives beside what it works on (`behest.local`,
`behest.fold`, `behest.read`, `behest.admin`, `behest.dlq`, `behest.watching`)."""
