/*
 * Stateward: the one-shot Java step of bin/elasticsearch for an Elasticsearch assembled from
 * Maven Central (the official launcher, server-cli, is not published there).
 *
 * It does what server-cli does before it starts the server JVM, and nothing while the server
 * runs (so no second JVM stays alive): it reads the configuration the official way
 * (EnvironmentAwareCommand: elasticsearch.yml, -E settings, ES_SETTING_* and dotted
 * environment variables in the docker distribution), opens or creates the keystore, and
 * writes two files into the server's temporary directory:
 *   server-args  the serialized ServerArgs the server reads from its stdin at boot
 *   jvm-args     the server JVM's command line (options and main module), one per line
 * Its only output on stdout is that directory (the last line). bin/elasticsearch then execs
 * the server JVM with these arguments and feeds it server-args.
 *
 * The temporary directory is $ES_TMPDIR, or "tmp" under the first data path (writable by the
 * node by definition, unlike ES_HOME or, with a read-only root filesystem, /tmp).
 */
package io.stateward.elasticsearch.launcher;

import joptsimple.OptionSet;
import joptsimple.OptionSpec;

import org.elasticsearch.Build;
import org.elasticsearch.bootstrap.ServerArgs;
import org.elasticsearch.cli.ExitCodes;
import org.elasticsearch.cli.ProcessInfo;
import org.elasticsearch.cli.UserException;
import org.elasticsearch.cli.terminal.Terminal;
import org.elasticsearch.common.cli.EnvironmentAwareCommand;
import org.elasticsearch.common.io.stream.OutputStreamStreamOutput;
import org.elasticsearch.common.settings.KeyStoreWrapper;
import org.elasticsearch.env.Environment;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

public final class Prepare extends EnvironmentAwareCommand {
    /** "17:-Xfoo", "17-:-Xfoo", "17-21:-Xfoo": options for some Java versions (jvm.options syntax). */
    private static final Pattern VERSIONED = Pattern.compile("^(\\d+)(-)?(\\d+)?:(.+)$");

    private final OptionSpec<Void> versionOption;
    private final OptionSpec<Void> daemonizeOption;
    private final OptionSpec<Void> quietOption;
    private final OptionSpec<String> pidFileOption;

    private Prepare() {
        super("Starts Elasticsearch (Stateward's launcher for a distribution built from Maven Central)");
        versionOption = parser.acceptsAll(List.of("V", "version"), "Prints Elasticsearch version information and exits");
        daemonizeOption = parser.acceptsAll(List.of("d", "daemonize"), "Not supported: the server runs in the foreground");
        quietOption = parser.acceptsAll(List.of("q", "quiet"), "Turns off standard output/error streams logging in console");
        pidFileOption = parser.acceptsAll(List.of("p", "pidfile"), "Creates a pid file in the specified path on start")
            .withRequiredArg();
    }

    public static void main(String[] args) throws IOException {
        int status;
        try (Prepare prepare = new Prepare()) {
            status = prepare.main(args, Terminal.DEFAULT, ProcessInfo.fromSystem());
        }
        exit(status);
    }

    /** The docker distribution (our image) also reads settings from environment variables, as upstream's does. */
    @Override
    protected Build.Type getBuildType() {
        return "docker".equals(System.getProperty("es.distribution.type")) ? Build.Type.DOCKER : Build.Type.TAR;
    }

    @Override
    public void execute(Terminal terminal, OptionSet options, Environment env, ProcessInfo info) throws Exception {
        if (options.nonOptionArguments().isEmpty() == false) {
            throw new UserException(ExitCodes.USAGE, "Positional arguments not allowed, found " + options.nonOptionArguments());
        }
        if (options.has(versionOption)) {
            terminal.println(
                "Version: " + Build.current().qualifiedVersion() + ", Build: " + getBuildType().displayName() + ", JVM: "
                    + Runtime.version()
            );
            return;
        }
        if (options.has(daemonizeOption)) {
            throw new UserException(ExitCodes.USAGE, "-d is not supported: this launcher keeps the server in the foreground");
        }
        Path home = Path.of(info.sysprops().get("es.path.home"));
        Path tmp = tmpDir(info.envVars(), env);

        List<String> jvm = new ArrayList<>(systemOptions(home, env.configDir(), tmp));
        List<String> user = userOptions(env.configDir(), info.envVars(), tmp);
        jvm.addAll(user);
        jvm.addAll(ergonomicOptions(user));
        jvm.addAll(
            List.of(
                "--module-path",
                home.resolve("lib").toString(),
                "--add-modules=jdk.net",
                "--add-modules=jdk.management.agent",
                "--add-modules=ALL-MODULE-PATH",
                "-m",
                "org.elasticsearch.server/org.elasticsearch.bootstrap.Elasticsearch"
            )
        );
        Files.write(tmp.resolve("jvm-args"), jvm, StandardCharsets.UTF_8);

        String pidFile = options.valueOf(pidFileOption);
        try (KeyStoreWrapper keystore = keystore(env.configDir())) {
            ServerArgs args = new ServerArgs(
                false,
                options.has(quietOption),
                pidFile == null ? null : Path.of(pidFile).toAbsolutePath(),
                keystore,
                env.settings(),
                env.configDir(),
                env.logsDir()
            );
            try (OutputStream file = Files.newOutputStream(tmp.resolve("server-args"));
                 OutputStreamStreamOutput out = new OutputStreamStreamOutput(file)) {
                args.writeTo(out);
            }
        }
        terminal.println(Terminal.Verbosity.SILENT, tmp.toString());
    }

    /** The keystore in the config dir when there is one (without a password), else an in-memory one. */
    private static KeyStoreWrapper keystore(Path configDir) throws Exception {
        KeyStoreWrapper keystore = KeyStoreWrapper.load(configDir);
        if (keystore == null) {
            keystore = KeyStoreWrapper.create();
        } else {
            keystore.decrypt(new char[0]);
        }
        KeyStoreWrapper.addBootstrapSeed(keystore);
        return keystore;
    }

    private static Path tmpDir(Map<String, String> envVars, Environment env) throws IOException, UserException {
        String configured = envVars.get("ES_TMPDIR");
        Path tmp;
        if (configured != null && configured.isEmpty() == false) {
            tmp = Path.of(configured);
        } else {
            Path[] data = env.dataDirs();
            if (data.length == 0) {
                throw new UserException(ExitCodes.CONFIG, "no data path configured and ES_TMPDIR is not set");
            }
            tmp = data[0].resolve("tmp");
        }
        if (Files.isDirectory(tmp) == false) {
            Files.createDirectories(tmp, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        }
        if (Files.isWritable(tmp) == false) {
            throw new UserException(ExitCodes.CONFIG, "temporary directory [" + tmp + "] is not writable");
        }
        return tmp.toAbsolutePath();
    }

    /** What upstream's launcher always passes, plus what a distribution built from Maven Central needs. */
    private static List<String> systemOptions(Path home, Path configDir, Path tmp) throws IOException {
        Path bridge;
        try (Stream<Path> jars = Files.list(home.resolve("lib/entitlement-bridge"))) {
            bridge = jars.filter(p -> p.toString().endsWith(".jar"))
                .findFirst()
                .orElseThrow(() -> new IOException("no jar in " + home.resolve("lib/entitlement-bridge")));
        }
        return List.of(
            "-Des.networkaddress.cache.ttl=60",
            "-Des.networkaddress.cache.negative.ttl=10",
            // No -XX:+AlwaysPreTouch (upstream has it): it makes the whole heap resident at
            // once, and memory is what small test nodes are short of.
            "-Xss1m",
            "-Djava.awt.headless=true",
            "-Dfile.encoding=UTF-8",
            "-Djna.nosys=true",
            "-XX:-OmitStackTraceInFastThrow",
            "-Dio.netty.noUnsafe=true",
            "-Dio.netty.noKeySetOptimization=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "-Dlog4j.shutdownHookEnabled=false",
            "-Dlog4j2.disable.jmx=true",
            "-Dlog4j2.formatMsgNoLookups=true",
            "-Djava.locale.providers=CLDR",
            "-Des.distribution.type=" + System.getProperty("es.distribution.type", "tar"),
            "--enable-native-access=org.elasticsearch.nativeaccess,org.apache.lucene.core,"
                + "org.elasticsearch.foreign,org.elasticsearch.foreign.adapter,ALL-UNNAMED",
            // Elastic's vector library (libvec) is not on Maven Central; without this its
            // absence turns off all native access (zstd, mlockall, rlimit checks).
            "-Dorg.elasticsearch.nativeaccess.enableVectorLibrary=false",
            "--add-modules=jdk.incubator.vector",
            // The entitlement agent is attached by the server to itself at boot.
            "-XX:+EnableDynamicAgentLoading",
            "-Djdk.attach.allowAttachSelf=true",
            "--patch-module=java.base=" + bridge,
            "--add-exports=java.base/org.elasticsearch.entitlement.bridge="
                + "org.elasticsearch.entitlement,java.logging,java.net.http,java.naming,jdk.net",
            "-Des.path.home=" + home,
            "-Des.path.conf=" + configDir,
            "-Djava.io.tmpdir=" + tmp,
            // ES_HOME (the working directory) is read-only: crash files go to the tmp dir.
            "-XX:ErrorFile=" + tmp.resolve("hs_err_pid%p.log"),
            "-XX:ReplayDataFile=" + tmp.resolve("replay_pid%p.log")
        );
    }

    /** jvm.options, jvm.options.d/*.options (in name order), then ES_JAVA_OPTS, as upstream. */
    private static List<String> userOptions(Path configDir, Map<String, String> envVars, Path tmp) throws IOException,
        UserException {
        List<Path> files = new ArrayList<>();
        Path main = configDir.resolve("jvm.options");
        if (Files.isRegularFile(main)) {
            files.add(main);
        }
        Path dir = configDir.resolve("jvm.options.d");
        if (Files.isDirectory(dir)) {
            try (Stream<Path> list = Files.list(dir)) {
                list.filter(p -> p.getFileName().toString().endsWith(".options")).filter(Files::isRegularFile).sorted().forEach(files::add);
            }
        }
        int java = Runtime.version().feature();
        List<String> out = new ArrayList<>();
        for (Path file : files) {
            int number = 0;
            for (String raw : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                number++;
                String line = raw.strip();
                if (line.isEmpty() || line.startsWith("#")) {
                    continue;
                }
                Matcher m = VERSIONED.matcher(line);
                if (m.matches()) {
                    int lower = Integer.parseInt(m.group(1));
                    int upper = m.group(2) == null ? lower : m.group(3) == null ? Integer.MAX_VALUE : Integer.parseInt(m.group(3));
                    if (java < lower || java > upper) {
                        continue;
                    }
                    line = m.group(4).strip();
                }
                if (line.startsWith("-") == false) {
                    throw new UserException(ExitCodes.CONFIG, "invalid JVM option at " + file + ":" + number + ": [" + raw + "]");
                }
                out.add(line.replace("${ES_TMPDIR}", tmp.toString()));
            }
        }
        String fromEnv = envVars.get("ES_JAVA_OPTS");
        if (fromEnv != null) {
            Arrays.stream(fromEnv.split("\\s+")).filter(s -> s.isBlank() == false).forEach(out::add);
        }
        return out;
    }

    /** A heap when none is given (half the memory, as upstream in a container) and direct memory of half the heap. */
    private static List<String> ergonomicOptions(List<String> user) {
        List<String> out = new ArrayList<>();
        boolean heap = user.stream()
            .anyMatch(o -> o.startsWith("-Xmx") || o.startsWith("-XX:MaxHeapSize=") || o.startsWith("-XX:MaxRAMPercentage="));
        if (heap == false) {
            out.add("-XX:MaxRAMPercentage=50");
            out.add("-XX:InitialRAMPercentage=50");
        }
        if (user.stream().noneMatch(o -> o.startsWith("-XX:MaxDirectMemorySize="))) {
            long max = -1;
            for (String o : user) {
                if (o.startsWith("-Xmx")) {
                    max = bytes(o.substring(4));
                } else if (o.startsWith("-XX:MaxHeapSize=")) {
                    max = bytes(o.substring("-XX:MaxHeapSize=".length()));
                }
            }
            if (max > 0) {
                out.add("-XX:MaxDirectMemorySize=" + max / 2);
            }
        }
        return out;
    }

    /** "512m" and the like in bytes; -1 when unreadable (then the JVM's own default applies). */
    private static long bytes(String size) {
        String s = size.strip().toLowerCase(Locale.ROOT);
        if (s.isEmpty()) {
            return -1;
        }
        long unit = switch (s.charAt(s.length() - 1)) {
            case 'k' -> 1L << 10;
            case 'm' -> 1L << 20;
            case 'g' -> 1L << 30;
            case 't' -> 1L << 40;
            default -> 1;
        };
        String digits = unit == 1 ? s : s.substring(0, s.length() - 1);
        try {
            return Long.parseLong(digits) * unit;
        } catch (NumberFormatException e) {
            return -1;
        }
    }
}
