@testable import CSI
import CSIProto
import OCI
import Registry
import Testing

@Suite("PublishRequest validation")
struct PublishRequestTests {
    @Test func defaults() throws {
        let request = try PublishRequest(publishRequest(target: "/var/lib/kubelet/pods/p/volumes/x/mount", attributes: ["image": "alpine"]))
        #expect(request.reference.description == "docker.io/library/alpine:latest")
        #expect(request.pullPolicy == .missing)
        #expect(request.tlsVerify)
        #expect(request.platform == .host)
        #expect(request.subPath == nil)
        if case .none = request.secrets {} else { Issue.record("expected no secrets") }
    }

    @Test func attributesAreParsed() throws {
        let request = try PublishRequest(publishRequest(target: "/t//a/./b/", attributes: [
            "image": "127.0.0.1:5000/m/llm:v1", "pullPolicy": "Always", "subPath": "/models/./llm/", "platform": "linux/arm64",
            "tlsVerify": "false",
        ]))
        #expect(request.targetPath == "/t/a/b")
        #expect(request.pullPolicy == .always)
        #expect(request.subPath == "models/llm")
        #expect(request.platform == Platform(os: "linux", architecture: "arm64"))
        #expect(!request.tlsVerify)
    }

    @Test("pullPolicy", arguments: [("Always", ImageService_PullPolicy.always), ("IfNotPresent", .missing), ("Never", .never), ("never", .never)])
    func pullPolicies(_ text: String, _ expected: ImageService_PullPolicy) throws {
        let request = try PublishRequest(publishRequest(target: "/t", attributes: ["image": "alpine", "pullPolicy": text]))
        #expect(request.pullPolicy == expected)
    }

    @Test func subPathRootMeansTheWholeImage() throws {
        #expect(try PublishRequest(publishRequest(target: "/t", attributes: ["image": "alpine", "subPath": "/"])).subPath == nil)
        #expect(try PublishRequest(publishRequest(target: "/t", attributes: ["image": "alpine", "subPath": "a/.."])).subPath == nil)
    }

    @Test func kubeletKeysAreDroppedAndUnknownKeysListed() throws {
        let request = try PublishRequest(publishRequest(target: "/t", attributes: [
            "image": "alpine", "csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/serviceAccount.tokens": "{\"token\":\"secret\"}",
            "csi.storage.k8s.io/ephemeral": "true", "colour": "blue",
        ]))
        #expect(request.attributes == ["image": "alpine", "colour": "blue"])
        #expect(request.unknownAttributes == ["colour"])
    }

    /// Kubelet sends SINGLE_NODE_WRITER for inline volumes; the mount is read-only anyway.
    @Test("any mount access mode is accepted", arguments: [
        Csi_V1_VolumeCapability.AccessMode.Mode.singleNodeWriter, .singleNodeReaderOnly, .multiNodeReaderOnly, .multiNodeMultiWriter, .unknown,
    ])
    func accessModes(_ mode: Csi_V1_VolumeCapability.AccessMode.Mode) throws {
        var request = publishRequest(target: "/t", attributes: ["image": "alpine"])
        request.volumeCapability.accessMode.mode = mode
        request.readonly = false
        _ = try PublishRequest(request)
    }

    @Test func usernameAndPasswordSecret() throws {
        let request = try PublishRequest(publishRequest(target: "/t", attributes: ["image": "quay.io/org/app:v1"],
                                                        secrets: ["username": "me", "password": "hunter2"]))
        var options = RegistryClient.Options()
        request.secrets.apply(to: &options)
        #expect(options.credentials == Credentials(username: "me", password: "hunter2"))
        #expect(!request.secrets.description.contains("hunter2"))
    }

    @Test func dockerConfigJSONSecretIsUsedPerRegistry() throws {
        let auth = "bWU6aHVudGVyMg=="  // me:hunter2
        let json = #"{"auths":{"quay.io":{"auth":"\#(auth)"}}}"#
        let request = try PublishRequest(publishRequest(target: "/t", attributes: ["image": "quay.io/org/app:v1"],
                                                        secrets: [".dockerconfigjson": json]))
        var options = RegistryClient.Options()
        request.secrets.apply(to: &options)
        #expect(options.credentials == nil)
        #expect(try options.authFile.credentials(registry: "quay.io", repository: "org/app", explicit: false) == Credentials(username: "me", password: "hunter2"))
        #expect(try options.authFile.credentials(registry: "ghcr.io", repository: "org/app", explicit: false) == nil)
        #expect(!request.secrets.description.contains("hunter2"))
    }
}

import Mounts
import Pull
typealias ImageService_PullPolicy = PullPolicy
