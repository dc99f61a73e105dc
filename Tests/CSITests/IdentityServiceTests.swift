import CSIProto
import Testing

@Suite("Identity service over a unix socket")
struct IdentityServiceTests {
    @Test func pluginInfoHasTheDefaultNameAndVersion() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            let info = try await h.identity.getPluginInfo(Csi_V1_GetPluginInfoRequest())
            #expect(info.name == "csi.imgvol.dev")
            #expect(info.vendorVersion == "0.1.0")
        }
    }

    @Test func driverNameIsConfigurable() async throws {
        try await PluginHarness.run(driverName: "images.example.com") { (h: PluginHarness) async throws in
            #expect(try await h.identity.getPluginInfo(Csi_V1_GetPluginInfoRequest()).name == "images.example.com")
        }
    }

    @Test func noControllerService() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            let capabilities = try await h.identity.getPluginCapabilities(Csi_V1_GetPluginCapabilitiesRequest()).capabilities
            #expect(!capabilities.contains { $0.service.type == .controllerService })
        }
    }

    @Test func probeIsReadyOnceServing() async throws {
        try await PluginHarness.run { (h: PluginHarness) async throws in
            let probe = try await h.identity.probe(Csi_V1_ProbeRequest())
            #expect(probe.hasReady)
            #expect(probe.ready.value)
        }
    }

    @Test func aStaleSocketFileIsReplaced() async throws {
        try await PluginHarness.run(prepare: { dir, _ in
            try FileManager.default.createDirectory(atPath: dir + "/plugins", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: dir + "/plugins/csi.sock", contents: Data("stale".utf8))
        }) { (h: PluginHarness) async throws in
            #expect(try await h.identity.probe(Csi_V1_ProbeRequest()).ready.value)
        }
    }
}

import Foundation
