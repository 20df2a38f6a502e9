using System;

namespace App.Models
{
    /// <summary>A person.</summary>
    [Serializable]
    public class Person : IEntity
    {
        public string Name { get; set; }

        public Person(string name) { Name = name; }

        /// <summary>Greets.</summary>
        [Obsolete]
        public string Greet() => $"Hi {Name}";

        private class Inner
        {
            void Helper() { }
        }

        ~Person() { }

        public static Person operator +(Person a, Person b) => a;
    }

    public interface IEntity
    {
        int Id { get; }
        void Save();
    }

    public struct Vec { public int X; public int Length() { return X; } }

    public enum Status { Active, Inactive }

    public record Rec(int A, int B);

    public delegate void Handler(int x);
}

namespace FileScoped.Other;

public static class Extensions
{
    public static int Double(this int x) => x * 2;

    static void Local()
    {
        int Square(int y) => y * y;
    }
}
