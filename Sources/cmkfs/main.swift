// The entry point only dispatches; every command lives in its own file.
CommandSuggestion.check(Array(CommandLine.arguments.dropFirst()))
CMKFSCommand.main()
