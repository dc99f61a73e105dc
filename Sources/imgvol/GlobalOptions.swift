import ArgumentParser
import Foundation

import Logging
import Store

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Store directory (default: $IMGVOL_ROOT, else /var/lib/imgvol).", valueName: "dir"))
    var root: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: Logger.Level = .warning

    var rootPath: String {
        root ?? ProcessInfo.processInfo.environment["IMGVOL_ROOT"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/lib/imgvol"
    }

    func makeLogger() -> Logger {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "imgvol")
    }

    static let valued: Set<String> = ["--root", "--log-level"]

    static func hoisted(_ arguments: [String]) -> [String] {
        var globals: [String] = []
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            let name = String(arg.split(separator: "=", maxSplits: 1).first ?? "")
            guard valued.contains(name) else { break }
            globals.append(arg)
            if !arg.contains("="), i + 1 < arguments.count { globals.append(arguments[i + 1]); i += 1 }
            i += 1
        }
        guard !globals.isEmpty, i < arguments.count else { return arguments }
        return [arguments[i]] + globals + arguments[(i + 1)...]
    }

    func openStore() throws -> ContentStore {
        try ContentStore(root: rootPath)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}
